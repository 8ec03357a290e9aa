// GENERATED FILE, do not edit: written by scripts/gen-wire-js (compound.protocol.wire_js) from
// the Python protocol in src/compound/protocol/. Change the Python, run scripts/gen-wire-js
// and commit both; scripts/check fails while this file and the Python differ.
//
// The web UI's wire constants: job statuses, streams, lending states, message and event
// types, close codes, the token subprotocols and the API's limits. Each line is one JSON
// value.

export const JobStatus = Object.freeze({"QUEUED": "queued", "RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELLED": "cancelled", "TIMED_OUT": "timed_out"});
export const TERMINAL_STATUSES = Object.freeze(["succeeded", "failed", "cancelled", "timed_out"]);
export const Stream = Object.freeze({"STDOUT": "stdout", "STDERR": "stderr", "SYSTEM": "system"});
export const ContributorState = Object.freeze({"IDLE": "idle", "BUSY": "busy", "PAUSED": "paused", "DRAINING": "draining", "OFFLINE": "offline"});
export const WaitingReason = Object.freeze({"NO_CONTRIBUTOR": "no contributor online", "ALL_BUSY": "all contributors busy", "ALL_PAUSED": "all contributors paused or outside their hours", "NO_PACKAGES": "none of the online contributors installs packages"});
export const Lending = Object.freeze({"ACTIVE": "active", "PAUSED": "paused", "DRAINING": "draining"});
export const FollowMessageType = Object.freeze({"RECORDS": "records", "STATUS": "status", "END": "end"});
export const AgentEventType = Object.freeze({"STARTING": "starting", "CONNECTING": "connecting", "CONNECTED": "connected", "DISCONNECTED": "disconnected", "STATS": "stats", "JOB_STARTED": "job_started", "JOB_FINISHED": "job_finished", "LENDING": "lending", "LOG": "log", "STOPPED": "stopped"});
export const CLOSE_NORMAL = 1000;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_PROTOCOL_ERROR = 1002;
export const CLOSE_BAD_DATA = 1007;
export const CLOSE_POLICY = 1008;
export const CLOSE_TOO_BIG = 1009;
export const CLOSE_TRY_AGAIN_LATER = 1013;
export const CLOSE_UNKNOWN_JOB = 4404;
export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_FORBIDDEN = 4403;
export const SUBPROTOCOL = "compound";
export const BEARER_SUBPROTOCOL_PREFIX = "compound.bearer.";
export const JOB_LIST_DEFAULT = 50;
export const JOB_LIST_MAX = 1000;
export const LOG_PAGE_RECORDS_DEFAULT = 5000;
export const LOG_PAGE_RECORDS_MAX = 20000;
