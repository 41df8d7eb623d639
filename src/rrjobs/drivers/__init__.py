"""Built-in drivers, one subpackage each. They register through the
``rrjobs.drivers`` entry-point group like third-party drivers; importing this
package imports no broker client."""
