"""The event streams features are computed from, with their data contracts."""

from registry.sdk import Field, Source

transactions = Source(
    "transactions",
    topic="transactions",
    timestamp_field="ts",
    timestamp_format="epoch_millis",
    watermark_delay="2s",
    schema=[
        Field("user_id", "string", required=True),
        Field("merchant_id", "string", required=True),
        Field("amount", "double", min=0),
        Field("currency", "string", allowed=["EUR", "USD", "GBP"]),
        Field("channel", "string", allowed=["web", "app", "pos"]),
        Field("ts", "long", required=True, description="Event time, epoch milliseconds."),
    ],
    owner="team-payments",
    description="One event per card payment.",
)
