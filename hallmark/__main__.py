from hallmark.cli import main

main()
