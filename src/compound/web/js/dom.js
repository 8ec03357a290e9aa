// Building DOM nodes without parsing markup: whatever text goes in stays text.
//
// The pages never hand a string to innerHTML (or any other HTML parser): a job's name, an
// exit code or a contributor's field from the coordinator is data, never markup. Elements
// are made here, text is set as text nodes, attributes one by one.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function setAttributes(el, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    // A style attribute is inline style, which the pages' CSP refuses: use classes or el.style.
    if (name === "style") throw new Error("Set styles with a class or el.style, not an attribute.");
    if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

/**
 * An HTML element: h("a", { class: "mono", href, dataset: { testid: "x" } }, "text", node).
 * Children are nodes or text (strings, numbers); null, undefined and false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, the same way: svg("path", { d: "M0 0h1", stroke: "currentColor" }). */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttributes(el, attrs);
  append(el, children);
  return el;
}

/** The "—" shown where a value is missing. */
export function missing(text = "—") {
  return h("span", { class: "muted" }, text);
}
