"""Device collectors: SunSpec Modbus TCP poller and OCPP 2.0.1/2.1 CSMS, publishing to MQTT."""
