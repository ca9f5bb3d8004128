"""gpuprov's Pulumi program for `pulumi up` from the repository: the one that ships in the package."""

from gpuprov.infra.program import main

main()
