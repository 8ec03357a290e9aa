"""What runs inside a job's container: the launcher, the job's files, the zygote, sitecustomize,
the output relay.

The container has no ``compound`` package: ``payload`` and ``spec`` (one level up) read these
modules' source by path and ship it through the container's stdin, where it runs as one
program (files, prestart, relay, launcher), a forked interpreter's program (zygote) and our
``sitecustomize.py`` (stdio). The agent imports them only for the stdin format's constants.
So: no third-party module, and no import a job's start would pay for without need.

Imports: standard library only
"""
