from gpuprov.app import main

main()
