CREATE TEMPORARY TABLE `source_events` (
  `message` STRING,
  `kafka_partition` INT METADATA FROM 'partition' VIRTUAL,
  `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL,
  `event_ms` AS TRY_CAST(JSON_VALUE(`message`, '$.ts') AS BIGINT),
  `event_time` AS TO_TIMESTAMP_LTZ(COALESCE(TRY_CAST(JSON_VALUE(`message`, '$.ts') AS BIGINT), 0), 3),
  WATERMARK FOR `event_time` AS `event_time` - INTERVAL '0 00:00:02.000' DAY TO SECOND(3)
) WITH (
  'connector' = 'kafka',
  'topic' = 'transactions',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'properties.group.id' = 'fp.merchant_transactions.v3',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'raw',
  'raw.charset' = 'UTF-8'
);

CREATE TEMPORARY TABLE `feature_rows` (`k` STRING, `v` STRING) WITH (
  'connector' = 'kafka',
  'topic' = 'fp.features.merchant_transactions.v3',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'key.format' = 'raw',
  'key.fields' = 'k',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY',
  'sink.delivery-guarantee' = 'at-least-once'
);

CREATE TEMPORARY TABLE `dead_letters` (`v` STRING) WITH (
  'connector' = 'kafka',
  'topic' = 'transactions.dlq',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'format' = 'raw',
  'sink.delivery-guarantee' = 'at-least-once'
);

CREATE TEMPORARY VIEW `checked_events` AS SELECT `message`, `kafka_partition`, `kafka_offset`, `event_ms`, `event_time`,
  COALESCE(
    CASE WHEN `message` IS NULL OR NOT (`message` IS JSON OBJECT) THEN 'payload is not a JSON object' END,
    CASE WHEN JSON_QUERY(`message`, '$.user_id' WITH ARRAY WRAPPER) IS NULL THEN 'user_id: required field is missing' END,
    CASE WHEN JSON_QUERY(`message`, '$.user_id' WITH ARRAY WRAPPER) IS NOT NULL AND (NOT REGEXP(JSON_QUERY(`message`, '$.user_id' WITH ARRAY WRAPPER), '^\["') OR JSON_VALUE(`message`, '$.user_id') IS NULL) THEN 'user_id: not a valid string' END,
    CASE WHEN JSON_QUERY(`message`, '$.merchant_id' WITH ARRAY WRAPPER) IS NULL THEN 'merchant_id: required field is missing' END,
    CASE WHEN JSON_QUERY(`message`, '$.merchant_id' WITH ARRAY WRAPPER) IS NOT NULL AND (NOT REGEXP(JSON_QUERY(`message`, '$.merchant_id' WITH ARRAY WRAPPER), '^\["') OR JSON_VALUE(`message`, '$.merchant_id') IS NULL) THEN 'merchant_id: not a valid string' END,
    CASE WHEN JSON_QUERY(`message`, '$.amount' WITH ARRAY WRAPPER) IS NOT NULL AND (NOT REGEXP(JSON_QUERY(`message`, '$.amount' WITH ARRAY WRAPPER), '^\[-?[0-9]') OR TRY_CAST(JSON_VALUE(`message`, '$.amount') AS DOUBLE) IS NULL) THEN 'amount: not a valid double' END,
    CASE WHEN JSON_QUERY(`message`, '$.amount' WITH ARRAY WRAPPER) IS NOT NULL AND TRY_CAST(JSON_VALUE(`message`, '$.amount') AS DOUBLE) < 0 THEN CONCAT('amount: ', JSON_VALUE(`message`, '$.amount'), ' is below the minimum 0') END,
    CASE WHEN JSON_QUERY(`message`, '$.currency' WITH ARRAY WRAPPER) IS NOT NULL AND (NOT REGEXP(JSON_QUERY(`message`, '$.currency' WITH ARRAY WRAPPER), '^\["') OR JSON_VALUE(`message`, '$.currency') IS NULL) THEN 'currency: not a valid string' END,
    CASE WHEN JSON_QUERY(`message`, '$.currency' WITH ARRAY WRAPPER) IS NOT NULL AND JSON_VALUE(`message`, '$.currency') NOT IN ('EUR', 'USD', 'GBP') THEN CONCAT('currency: ', JSON_VALUE(`message`, '$.currency'), ' is not an allowed value') END,
    CASE WHEN JSON_QUERY(`message`, '$.channel' WITH ARRAY WRAPPER) IS NOT NULL AND (NOT REGEXP(JSON_QUERY(`message`, '$.channel' WITH ARRAY WRAPPER), '^\["') OR JSON_VALUE(`message`, '$.channel') IS NULL) THEN 'channel: not a valid string' END,
    CASE WHEN JSON_QUERY(`message`, '$.channel' WITH ARRAY WRAPPER) IS NOT NULL AND JSON_VALUE(`message`, '$.channel') NOT IN ('web', 'app', 'pos') THEN CONCAT('channel: ', JSON_VALUE(`message`, '$.channel'), ' is not an allowed value') END,
    CASE WHEN JSON_QUERY(`message`, '$.ts' WITH ARRAY WRAPPER) IS NULL THEN 'ts: required field is missing' END,
    CASE WHEN JSON_QUERY(`message`, '$.ts' WITH ARRAY WRAPPER) IS NOT NULL AND (NOT REGEXP(JSON_QUERY(`message`, '$.ts' WITH ARRAY WRAPPER), '^\[-?[0-9]+\]$') OR TRY_CAST(JSON_VALUE(`message`, '$.ts') AS BIGINT) IS NULL) THEN 'ts: not a valid long' END,
    CASE WHEN TO_TIMESTAMP_LTZ(`event_ms` - MOD(`event_ms`, 60000) + 59999, 3) <= CURRENT_WATERMARK(`event_time`) THEN 'late: its window has already closed' END) AS `violation`
FROM `source_events`;

CREATE TEMPORARY VIEW `clean_events` AS SELECT `event_ms`, `event_time`,
  JSON_VALUE(`message`, '$.merchant_id') AS `merchant_id`,
  TRY_CAST(JSON_VALUE(`message`, '$.amount') AS DOUBLE) AS `amount`
FROM `checked_events` WHERE `violation` IS NULL;

INSERT INTO `dead_letters` SELECT JSON_OBJECT(KEY 'reason' VALUE `violation`, KEY 'view' VALUE 'merchant_transactions', KEY 'namespace' VALUE 'v3', KEY 'topic' VALUE 'transactions', KEY 'partition' VALUE `kafka_partition`, KEY 'offset' VALUE `kafka_offset`, KEY 'payload' VALUE `message`) FROM `checked_events` WHERE `violation` IS NOT NULL;

INSERT INTO `feature_rows` SELECT REPLACE(REPLACE(CAST(`merchant_id` AS STRING), '\', '\\'), '|', '\|'), JSON_OBJECT(KEY 'e' VALUE REPLACE(REPLACE(CAST(`merchant_id` AS STRING), '\', '\\'), '|', '\|'), KEY 't' VALUE (UNIX_TIMESTAMP(CAST(`window_end` AS STRING)) * 1000 + EXTRACT(MILLISECOND FROM `window_end`)), KEY 'f' VALUE JSON_OBJECT(KEY 'txn_count_1m' VALUE COUNT(*), KEY 'amount_1m' VALUE SUM(`amount`), KEY 'amount_min_1m' VALUE MIN(`amount`)), KEY 'p' VALUE FALSE, KEY 'l' VALUE FALSE, KEY 'w' VALUE TRUE)
FROM TABLE(TUMBLE(TABLE `clean_events`, DESCRIPTOR(`event_time`), INTERVAL '0 00:01:00.000' DAY TO SECOND(3)))
GROUP BY `merchant_id`, `window_start`, `window_end`;
