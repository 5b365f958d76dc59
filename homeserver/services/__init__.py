"""Services: the logic of one domain each, between the servlets and the stores."""
