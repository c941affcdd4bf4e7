"""`python -m realtime` is the `realtime` command."""

from realtime.cli import main

if __name__ == "__main__":
    main()
