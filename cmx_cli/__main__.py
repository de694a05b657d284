"""Allow ``python -m cmx_cli``."""
from cmx_cli.cli import main

if __name__ == "__main__":
    main()
