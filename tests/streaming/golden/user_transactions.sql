CREATE TEMPORARY TABLE `source_events` (
  `message` STRING,
  `kafka_partition` INT METADATA FROM 'partition' VIRTUAL,
  `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL,
  `event_time` AS TO_TIMESTAMP_LTZ(COALESCE(TRY_CAST(JSON_VALUE(`message`, '$.ts') AS BIGINT), 0), 3),
  WATERMARK FOR `event_time` AS `event_time` - INTERVAL '0 00:00:02.000' DAY TO SECOND(3)
) WITH (
  'connector' = 'kafka',
  'topic' = 'transactions',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'properties.group.id' = 'fp.user_transactions.v3',
  'properties.fetch.max.wait.ms' = '50',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'raw',
  'raw.charset' = 'UTF-8'
);

CREATE TEMPORARY TABLE `feature_rows` (`k` STRING, `v` STRING) WITH (
  'connector' = 'kafka',
  'topic' = 'fp.features.user_transactions.v3',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'key.format' = 'raw',
  'key.fields' = 'k',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY',
  'sink.delivery-guarantee' = 'at-least-once',
  'properties.linger.ms' = '10',
  'properties.batch.size' = '1048576'
);

CREATE TEMPORARY TABLE `dead_letters` (`v` STRING) WITH (
  'connector' = 'kafka',
  'topic' = 'transactions.dlq',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'format' = 'raw',
  'sink.delivery-guarantee' = 'at-least-once'
);

CREATE TEMPORARY TABLE `drift_statistics` (`k` STRING, `v` STRING) WITH (
  'connector' = 'kafka',
  'topic' = 'fp.statistics.user_transactions.v3',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'key.format' = 'raw',
  'key.fields' = 'k',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY',
  'sink.delivery-guarantee' = 'at-least-once',
  'properties.linger.ms' = '10',
  'properties.batch.size' = '1048576'
);

CREATE TEMPORARY VIEW `parsed_events` AS SELECT `message`, `kafka_partition`, `kafka_offset`, `event_time`,
  `message` IS NOT NULL AND `message` IS JSON OBJECT AS `is_object`,
  CASE WHEN RAND() >= 0 THEN JSON_QUERY(`message`, '$.user_id' WITH ARRAY WRAPPER) END AS `raw:user_id`,
  CASE WHEN RAND() >= 0 THEN JSON_QUERY(`message`, '$.merchant_id' WITH ARRAY WRAPPER) END AS `raw:merchant_id`,
  CASE WHEN RAND() >= 0 THEN JSON_QUERY(`message`, '$.amount' WITH ARRAY WRAPPER) END AS `raw:amount`,
  CASE WHEN RAND() >= 0 THEN JSON_QUERY(`message`, '$.currency' WITH ARRAY WRAPPER) END AS `raw:currency`,
  CASE WHEN RAND() >= 0 THEN JSON_QUERY(`message`, '$.channel' WITH ARRAY WRAPPER) END AS `raw:channel`,
  CASE WHEN RAND() >= 0 THEN JSON_QUERY(`message`, '$.ts' WITH ARRAY WRAPPER) END AS `raw:ts`
FROM `source_events`;

CREATE TEMPORARY VIEW `typed_events` AS SELECT `message`, `kafka_partition`, `kafka_offset`, `event_time`, `is_object`,
  TRY_CAST(SUBSTR(`raw:ts`, 2, CHAR_LENGTH(`raw:ts`) - 2) AS BIGINT) AS `event_ms`,
  `raw:user_id`, CASE WHEN RAND() >= 0 THEN JSON_VALUE(`raw:user_id`, '$[0]') END AS `typed:user_id`,
  `raw:merchant_id`, CASE WHEN RAND() >= 0 THEN JSON_VALUE(`raw:merchant_id`, '$[0]') END AS `typed:merchant_id`,
  `raw:amount`, CASE WHEN RAND() >= 0 THEN TRY_CAST(SUBSTR(`raw:amount`, 2, CHAR_LENGTH(`raw:amount`) - 2) AS DOUBLE) END AS `typed:amount`,
  `raw:currency`, CASE WHEN RAND() >= 0 THEN JSON_VALUE(`raw:currency`, '$[0]') END AS `typed:currency`,
  `raw:channel`, CASE WHEN RAND() >= 0 THEN JSON_VALUE(`raw:channel`, '$[0]') END AS `typed:channel`,
  `raw:ts`, CASE WHEN RAND() >= 0 THEN TRY_CAST(SUBSTR(`raw:ts`, 2, CHAR_LENGTH(`raw:ts`) - 2) AS BIGINT) END AS `typed:ts`
FROM `parsed_events`;

CREATE TEMPORARY VIEW `checked_events` AS SELECT `message`, `kafka_partition`, `kafka_offset`, `event_time`, `event_ms`,
  `typed:user_id`, `typed:amount`, `typed:channel`, `raw:amount`, `raw:currency`, `raw:channel`, 
  COALESCE(
    CASE WHEN NOT `is_object` THEN 0 END,
    CASE WHEN `raw:user_id` IS NULL THEN 1 END,
    CASE WHEN `raw:user_id` IS NOT NULL AND (NOT REGEXP(`raw:user_id`, '^\["') OR `typed:user_id` IS NULL) THEN 2 END,
    CASE WHEN `raw:merchant_id` IS NULL THEN 3 END,
    CASE WHEN `raw:merchant_id` IS NOT NULL AND (NOT REGEXP(`raw:merchant_id`, '^\["') OR `typed:merchant_id` IS NULL) THEN 4 END,
    CASE WHEN `raw:amount` IS NOT NULL AND (NOT REGEXP(`raw:amount`, '^\[-?[0-9]') OR `typed:amount` IS NULL) THEN 5 END,
    CASE WHEN `typed:amount` < 0 THEN 6 END,
    CASE WHEN `raw:currency` IS NOT NULL AND (NOT REGEXP(`raw:currency`, '^\["') OR `typed:currency` IS NULL) THEN 7 END,
    CASE WHEN `typed:currency` NOT IN ('EUR', 'USD', 'GBP') THEN 8 END,
    CASE WHEN `raw:channel` IS NOT NULL AND (NOT REGEXP(`raw:channel`, '^\["') OR `typed:channel` IS NULL) THEN 9 END,
    CASE WHEN `typed:channel` NOT IN ('web', 'app', 'pos') THEN 10 END,
    CASE WHEN `raw:ts` IS NULL THEN 11 END,
    CASE WHEN `raw:ts` IS NOT NULL AND (NOT REGEXP(`raw:ts`, '^\[-?[0-9]+\]$') OR `typed:ts` IS NULL) THEN 12 END,
    CASE WHEN `event_ms` IS NULL THEN 13 END,
    CASE WHEN TO_TIMESTAMP_LTZ(`event_ms` - MOD(`event_ms`, 60000) + 59999, 3) <= CURRENT_WATERMARK(`event_time`) THEN 14 END,
    CASE WHEN TO_TIMESTAMP_LTZ(`event_ms` - MOD(`event_ms`, 300000) + 299999, 3) <= CURRENT_WATERMARK(`event_time`) THEN 14 END) AS `broken_rule`
FROM `typed_events`;

CREATE TEMPORARY VIEW `clean_events` AS SELECT `event_ms`, `event_time`,
  `typed:user_id` AS `user_id`,
  `typed:amount` AS `amount`,
  `typed:channel` AS `channel`
FROM `checked_events` WHERE `broken_rule` IS NULL;

CREATE TEMPORARY VIEW `window_rows_1` AS SELECT `user_id`, `window_start`, `window_end`, `window_time`,
  COUNT(*) AS `txn_count_1m`,
  SUM(`amount`) AS `amount_1m`
FROM TABLE(TUMBLE(TABLE `clean_events`, DESCRIPTOR(`event_time`), INTERVAL '0 00:01:00.000' DAY TO SECOND(3)))
GROUP BY `user_id`, `window_start`, `window_end`, `window_time`;

CREATE TEMPORARY VIEW `window_rows_2` AS SELECT `user_id`, `window_start`, `window_end`, `window_time`,
  AVG(CAST(`amount` AS DOUBLE)) AS `amount_avg_5m`
FROM TABLE(HOP(TABLE `clean_events`, DESCRIPTOR(`event_time`), INTERVAL '0 00:01:00.000' DAY TO SECOND(3), INTERVAL '0 00:05:00.000' DAY TO SECOND(3)))
GROUP BY `user_id`, `window_start`, `window_end`, `window_time`;

CREATE TEMPORARY VIEW `window_rows_3` AS SELECT `user_id`, `window_start`, `window_end`, `window_time`,
  MAX(`amount`) AS `amount_max_5m`,
  STDDEV_POP(CAST(`amount` AS DOUBLE)) AS `amount_stddev_5m`
FROM TABLE(TUMBLE(TABLE `clean_events`, DESCRIPTOR(`event_time`), INTERVAL '0 00:05:00.000' DAY TO SECOND(3)))
GROUP BY `user_id`, `window_start`, `window_end`, `window_time`;

INSERT INTO `dead_letters` SELECT JSON_OBJECT(KEY 'reason' VALUE CASE `broken_rule` WHEN 0 THEN 'payload is not a JSON object' WHEN 1 THEN 'user_id: required field is missing' WHEN 2 THEN 'user_id: not a valid string' WHEN 3 THEN 'merchant_id: required field is missing' WHEN 4 THEN 'merchant_id: not a valid string' WHEN 5 THEN 'amount: not a valid double' WHEN 6 THEN CONCAT('amount: ', SUBSTR(`raw:amount`, 2, CHAR_LENGTH(`raw:amount`) - 2), ' is below the minimum 0') WHEN 7 THEN 'currency: not a valid string' WHEN 8 THEN CONCAT('currency: ', JSON_VALUE(`raw:currency`, '$[0]'), ' is not an allowed value') WHEN 9 THEN 'channel: not a valid string' WHEN 10 THEN CONCAT('channel: ', JSON_VALUE(`raw:channel`, '$[0]'), ' is not an allowed value') WHEN 11 THEN 'ts: required field is missing' WHEN 12 THEN 'ts: not a valid long' WHEN 13 THEN 'event time is missing or unreadable' ELSE 'late: its window has already closed' END,
  KEY 'reason_code' VALUE CASE `broken_rule` WHEN 0 THEN 'not_an_object' WHEN 1 THEN 'missing_required' WHEN 2 THEN 'wrong_type' WHEN 3 THEN 'missing_required' WHEN 4 THEN 'wrong_type' WHEN 5 THEN 'wrong_type' WHEN 6 THEN 'below_min' WHEN 7 THEN 'wrong_type' WHEN 8 THEN 'not_allowed' WHEN 9 THEN 'wrong_type' WHEN 10 THEN 'not_allowed' WHEN 11 THEN 'missing_required' WHEN 12 THEN 'wrong_type' WHEN 13 THEN 'unreadable_event_time' ELSE 'late' END,
  KEY 'field' VALUE CASE `broken_rule` WHEN 0 THEN CAST(NULL AS STRING) WHEN 1 THEN 'user_id' WHEN 2 THEN 'user_id' WHEN 3 THEN 'merchant_id' WHEN 4 THEN 'merchant_id' WHEN 5 THEN 'amount' WHEN 6 THEN 'amount' WHEN 7 THEN 'currency' WHEN 8 THEN 'currency' WHEN 9 THEN 'channel' WHEN 10 THEN 'channel' WHEN 11 THEN 'ts' WHEN 12 THEN 'ts' WHEN 13 THEN CAST(NULL AS STRING) ELSE CAST(NULL AS STRING) END,
  KEY 'origin' VALUE 'stream', KEY 'view' VALUE 'user_transactions', KEY 'namespace' VALUE 'v3', KEY 'topic' VALUE 'transactions', KEY 'partition' VALUE `kafka_partition`, KEY 'offset' VALUE `kafka_offset`, KEY 'payload' VALUE `message`) FROM `checked_events` WHERE `broken_rule` IS NOT NULL;

INSERT INTO `feature_rows` SELECT REPLACE(REPLACE(CAST(`user_id` AS STRING), '\', '\\'), '|', '\|'), JSON_OBJECT(KEY 'e' VALUE REPLACE(REPLACE(CAST(`user_id` AS STRING), '\', '\\'), '|', '\|'), KEY 't' VALUE (UNIX_TIMESTAMP(CAST(`window_end` AS STRING)) * 1000 + EXTRACT(MILLISECOND FROM `window_end`)), KEY 'f' VALUE JSON_OBJECT(KEY 'txn_count_1m' VALUE `txn_count_1m`, KEY 'amount_1m' VALUE `amount_1m`), KEY 'p' VALUE TRUE, KEY 'l' VALUE FALSE, KEY 'w' VALUE TRUE)
FROM `window_rows_1`;

INSERT INTO `feature_rows` SELECT REPLACE(REPLACE(CAST(`user_id` AS STRING), '\', '\\'), '|', '\|'), JSON_OBJECT(KEY 'e' VALUE REPLACE(REPLACE(CAST(`user_id` AS STRING), '\', '\\'), '|', '\|'), KEY 't' VALUE (UNIX_TIMESTAMP(CAST(`window_end` AS STRING)) * 1000 + EXTRACT(MILLISECOND FROM `window_end`)), KEY 'f' VALUE JSON_OBJECT(KEY 'amount_avg_5m' VALUE `amount_avg_5m`), KEY 'p' VALUE TRUE, KEY 'l' VALUE FALSE, KEY 'w' VALUE TRUE)
FROM `window_rows_2`;

INSERT INTO `feature_rows` SELECT REPLACE(REPLACE(CAST(`user_id` AS STRING), '\', '\\'), '|', '\|'), JSON_OBJECT(KEY 'e' VALUE REPLACE(REPLACE(CAST(`user_id` AS STRING), '\', '\\'), '|', '\|'), KEY 't' VALUE (UNIX_TIMESTAMP(CAST(`window_end` AS STRING)) * 1000 + EXTRACT(MILLISECOND FROM `window_end`)), KEY 'f' VALUE JSON_OBJECT(KEY 'amount_max_5m' VALUE `amount_max_5m`, KEY 'amount_stddev_5m' VALUE `amount_stddev_5m`), KEY 'p' VALUE TRUE, KEY 'l' VALUE FALSE, KEY 'w' VALUE TRUE)
FROM `window_rows_3`;

INSERT INTO `feature_rows` SELECT REPLACE(REPLACE(CAST(`user_id` AS STRING), '\', '\\'), '|', '\|'), JSON_OBJECT(KEY 'e' VALUE REPLACE(REPLACE(CAST(`user_id` AS STRING), '\', '\\'), '|', '\|'), KEY 't' VALUE `event_ms`, KEY 'f' VALUE JSON_OBJECT(KEY 'last_channel' VALUE `channel`), KEY 'p' VALUE TRUE, KEY 'l' VALUE TRUE, KEY 'w' VALUE FALSE)
FROM `clean_events` WHERE `channel` IS NOT NULL;

CREATE TEMPORARY VIEW `feature_values` AS SELECT `value_time`, `feature`, `number`, CASE WHEN `number` IS NULL THEN CAST(NULL AS INT) WHEN ABS(`number`) < 1E-9 THEN 0 WHEN ABS(`number`) >= 1E19 THEN CAST(SIGN(`number`) AS INT) * 281 ELSE CAST(SIGN(`number`) AS INT) * (1 + CAST(FLOOR((LOG10(ABS(`number`)) + 9) * 10) AS INT)) END AS `bucket`, `text`
FROM (
  SELECT CAST(`txn_count_1m` AS DOUBLE) AS `number`, CAST(NULL AS STRING) AS `text`, 0 AS `feature`, `window_time` AS `value_time` FROM `window_rows_1`
  UNION ALL SELECT CASE WHEN ABS(CAST(`amount_1m` AS DOUBLE)) <= 1.7976931348623157E308 THEN CAST(`amount_1m` AS DOUBLE) END AS `number`, CAST(NULL AS STRING) AS `text`, 1 AS `feature`, `window_time` AS `value_time` FROM `window_rows_1`
  UNION ALL SELECT CASE WHEN ABS(CAST(`amount_avg_5m` AS DOUBLE)) <= 1.7976931348623157E308 THEN CAST(`amount_avg_5m` AS DOUBLE) END AS `number`, CAST(NULL AS STRING) AS `text`, 2 AS `feature`, `window_time` AS `value_time` FROM `window_rows_2`
  UNION ALL SELECT CASE WHEN ABS(CAST(`amount_max_5m` AS DOUBLE)) <= 1.7976931348623157E308 THEN CAST(`amount_max_5m` AS DOUBLE) END AS `number`, CAST(NULL AS STRING) AS `text`, 3 AS `feature`, `window_time` AS `value_time` FROM `window_rows_3`
  UNION ALL SELECT CASE WHEN ABS(CAST(`amount_stddev_5m` AS DOUBLE)) <= 1.7976931348623157E308 THEN CAST(`amount_stddev_5m` AS DOUBLE) END AS `number`, CAST(NULL AS STRING) AS `text`, 4 AS `feature`, `window_time` AS `value_time` FROM `window_rows_3`
  UNION ALL SELECT CAST(NULL AS DOUBLE) AS `number`, `channel` AS `text`, 5 AS `feature`, `event_time` AS `value_time` FROM `clean_events` WHERE `channel` IS NOT NULL
);

INSERT INTO `drift_statistics` SELECT CASE `feature` WHEN 0 THEN 'txn_count_1m' WHEN 1 THEN 'amount_1m' WHEN 2 THEN 'amount_avg_5m' WHEN 3 THEN 'amount_max_5m' WHEN 4 THEN 'amount_stddev_5m' WHEN 5 THEN 'last_channel' END, JSON_OBJECT(KEY 's' VALUE (UNIX_TIMESTAMP(CAST(`window_start` AS STRING)) * 1000 + EXTRACT(MILLISECOND FROM `window_start`)), KEY 'e' VALUE (UNIX_TIMESTAMP(CAST(`window_end` AS STRING)) * 1000 + EXTRACT(MILLISECOND FROM `window_end`)), KEY 'f' VALUE CASE `feature` WHEN 0 THEN 'txn_count_1m' WHEN 1 THEN 'amount_1m' WHEN 2 THEN 'amount_avg_5m' WHEN 3 THEN 'amount_max_5m' WHEN 4 THEN 'amount_stddev_5m' WHEN 5 THEN 'last_channel' END, KEY 'b' VALUE `bucket`, KEY 'c' VALUE `text`, KEY 'r' VALUE COUNT(*), KEY 'sum' VALUE SUM(`number`), KEY 'sq' VALUE SUM(`number` * `number`), KEY 'lo' VALUE MIN(`number`), KEY 'hi' VALUE MAX(`number`))
FROM TABLE(TUMBLE(TABLE `feature_values`, DESCRIPTOR(`value_time`), INTERVAL '0 00:05:00.000' DAY TO SECOND(3)))
GROUP BY `feature`, `bucket`, `text`, `window_start`, `window_end`;
