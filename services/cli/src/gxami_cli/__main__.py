"""python -m gxami_cli: the gxami command."""

from gxami_cli.main import main

main()
