from tmixcli.cli import main

main()
