"""Installing devices: from an empty board to a registered, locked-down door device.

The filesystem image (`image`), writing it and MicroPython to a board (`flash`), the device's
own key and registration (`provision`), the organisation's keys and certificates (`pki`),
Mosquitto's configuration (`broker_config`), staff credentials (`enroll`) and the production
boot (`lockdown`). Imports `kvitto.store` and `kvitto.evidence`, never collect or verify.
"""
