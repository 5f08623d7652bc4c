"""One guest's CPU over its life: define -> pin -> start + verify -> migrate/restore checks.

A guest definition is *pinned* once (``define``): every property of its CPU that the
guest can see is made explicit for its machine type and accelerator, and hashed into
an ABI fingerprint.  Starts, restores and migrations use the pin, never the loose
definition it came from; host-relative modes (host-model, host-passthrough, maximum)
are recomputed only on a fresh start.
"""
