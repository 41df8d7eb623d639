"""``my_awesome_driver``: the driver of rrjobs' "Writing a driver" tutorial, on the kit."""
