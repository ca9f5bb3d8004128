"""The OHIF-AI viewer on this machine (``gpuprov viewer``), wired to the stack's MONAI Label through
gpuprov's SSH tunnel: OHIF-AI's own local half (the viewer behind nginx, and Orthanc), never a public port."""
