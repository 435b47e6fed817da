"""The link to the collector: the asyncio MQTT client, the device clock with its NTP sync, and the
link that publishes journaled events and takes the organisation's signed commands.

    from device.link.collector import Link, journal_signer
    link = Link("tag-0042", journal, journal_signer(journal, secret, "tag-0042"), org_public)

Imports evidence (COSE, Ed25519, event) and the board layer; never drivers, roles or app.
"""
