from __future__ import annotations

import pytest
from pydantic import SecretStr

from freshet.common import topics
from freshet.common.exceptions import ConfigError
from freshet.common.secrets import SecretBox


def test_cdc_topic_follows_debezium_naming_and_cleans_illegal_characters():
    assert topics.cdc_topic("shop", "public", "orders") == "shop.public.orders"
    assert topics.cdc_topic("shop", "my schema", "ord€rs") == "shop.my_schema.ord_rs"


def test_derived_topics():
    assert topics.view_topic("revenue") == "freshet.view.revenue"
    assert topics.dlq_topic("p1") == "freshet.dlq.p1"


def test_secret_box_round_trip_and_wrong_key():
    box = SecretBox(SecretStr(SecretBox.generate_key()))
    token = box.encrypt(SecretStr("hunter2"))
    assert "hunter2" not in token
    assert box.decrypt(token).get_secret_value() == "hunter2"
    other = SecretBox(SecretStr(SecretBox.generate_key()))
    with pytest.raises(ConfigError, match="FRESHET_SECRET_KEY"):
        other.decrypt(token)


def test_secret_box_requires_a_key():
    with pytest.raises(ConfigError, match="FRESHET_SECRET_KEY is not set"):
        SecretBox(SecretStr(""))
