from fercli.cli import main

main()
