"""What is not the driver: the multi-host testbed and the offline test image, shared by the
tests (tests/), the benchmark (bench/) and `xmasq testbed`. Needs requirements-dev.txt
(the docker SDK); the driver never imports it but for `xmasq testbed`."""
