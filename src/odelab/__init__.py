"""odelab."""
