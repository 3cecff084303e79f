"""The business objects features are keyed by."""

from registry.sdk import Entity

user = Entity("user", join_keys=["user_id"], description="A customer paying by card.")
merchant = Entity("merchant", join_keys=["merchant_id"], description="A shop accepting payments.")
