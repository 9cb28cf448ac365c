from fcs.cli import main

main()
