"""guestcpu: fully specified, verified and stable guest CPUs for QEMU/KVM."""

__version__ = "0.1.0"
