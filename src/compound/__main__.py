from compound.cli.main import main

main()
