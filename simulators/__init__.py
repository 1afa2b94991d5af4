"""Stand-ins for hardware: SunSpec inverters, OCPP charge points with EVs, grid frequency."""
