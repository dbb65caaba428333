"""``python -m gkernel -f CONNECTION_FILE``: start one kernel in this process."""

from gkernel.kernelapp import launch

if __name__ == "__main__":
    launch()
