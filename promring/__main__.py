from promring.cli import main

main()
