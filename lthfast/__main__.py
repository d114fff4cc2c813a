"""`python -m lthfast`: signals are routed before the heavy imports, so that a Ctrl-C or a
SIGTERM at any moment ends with one line and exit status 130."""
import sys

from lthfast.foundations import signals


def run() -> int:
    signals.install()
    try:
        from lthfast.cli.main import main  # imports torch: seconds
    except (signals.Stopped, KeyboardInterrupt) as exc:
        print(f"error: interrupted ({exc or 'SIGINT'}) while starting; nothing was written", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
