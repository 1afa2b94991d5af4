"""Closed-loop control: setpoint writers with the safety clamp at the last hop."""
