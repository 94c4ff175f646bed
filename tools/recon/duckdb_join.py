"""The same reconciliation in DuckDB, for tools/recon/bench.sh: read the trade bill and the
platform file, FULL OUTER JOIN on (kind, out_no), classify with the same rules as
paygate-recon (state, then amount, then fee; duplicates; unpaid/refused rightly absent),
and count per class. Prints one JSON line: seconds, counts.

usage: duckdb_join.py DIR [THREADS]
"""
import json
import sys
import time

import duckdb

d = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2

QUERY = f"""
WITH b AS (
  SELECT
    CASE WHEN "交易状态" = '`REFUND' THEN 'R' ELSE 'P' END AS kind,
    CASE WHEN "交易状态" = '`REFUND' THEN substr("商户退款单号", 2) ELSE substr("商户订单号", 2) END AS out_no,
    CASE WHEN "交易状态" = '`REFUND'
         THEN CAST(CAST(substr("申请退款金额", 2) AS DECIMAL(18, 2)) * 100 AS BIGINT)
         ELSE CAST(CAST(substr("订单金额", 2) AS DECIMAL(18, 2)) * 100 AS BIGINT) END AS amount_fen,
    CAST(CAST(substr("手续费", 2) AS DECIMAL(18, 5)) * 100000 AS BIGINT) AS fee_milli_fen,
    CASE WHEN "交易状态" = '`REFUND' THEN
           CASE substr("退款状态", 2) WHEN 'SUCCESS' THEN 'REFUND_SUCCESS' WHEN 'PROCESSING' THEN 'REFUND_PROCESSING'
                WHEN 'FAIL' THEN 'REFUND_FAILED' ELSE 'REFUND_ABNORMAL' END
         WHEN "交易状态" = '`SUCCESS' THEN 'PAID' ELSE 'REVOKED' END AS state
  FROM read_csv('{d}/bill.csv', header = true, all_varchar = true, delim = ',', quote = '', escape = '',
                ignore_errors = true)
  WHERE "交易时间" LIKE '`%'
),
bg AS (
  SELECT kind, out_no, count(*) AS n, first(amount_fen) AS amount_fen, first(fee_milli_fen) AS fee_milli_fen,
         first(state) AS state
  FROM b GROUP BY kind, out_no
),
p AS (
  SELECT * FROM read_csv('{d}/platform.csv', header = true, delim = ',', quote = '', escape = '',
    columns = {{'kind': 'VARCHAR', 'out_no': 'VARCHAR', 'transaction_id': 'VARCHAR', 'mchid': 'VARCHAR',
               'amount_fen': 'BIGINT', 'fee_milli_fen': 'BIGINT', 'state': 'VARCHAR', 'time': 'VARCHAR'}})
),
j AS (
  SELECT
    CASE
      WHEN p.out_no IS NULL THEN 'CHANNEL_ONLY'
      WHEN bg.out_no IS NULL THEN
        CASE WHEN p.state IN ('UNPAID', 'CLOSED', 'REFUND_FAILED') THEN 'ABSENT_AS_EXPECTED' ELSE 'PLATFORM_ONLY' END
      WHEN NOT ((bg.state = 'PAID' AND p.state = 'PAID')
             OR (bg.state = 'REVOKED' AND p.state = 'CLOSED')
             OR (bg.state = 'REFUND_PROCESSING'
                 AND p.state IN ('REFUND_PROCESSING', 'REFUND_SUCCESS', 'REFUND_FAILED', 'REFUND_ABNORMAL'))
             OR (bg.state = p.state AND bg.state IN ('REFUND_SUCCESS', 'REFUND_FAILED', 'REFUND_ABNORMAL')))
        THEN 'STATUS_MISMATCH'
      WHEN bg.amount_fen <> p.amount_fen THEN 'AMOUNT_MISMATCH'
      WHEN p.fee_milli_fen IS NOT NULL AND bg.fee_milli_fen <> p.fee_milli_fen THEN 'FEE_MISMATCH'
      ELSE 'MATCHED'
    END AS class,
    coalesce(bg.n, 1) - 1 AS extra
  FROM bg FULL OUTER JOIN p ON bg.kind = p.kind AND bg.out_no = p.out_no
)
SELECT class, count(*) AS n, sum(extra) AS dups FROM j GROUP BY class
"""

con = duckdb.connect()
con.execute(f"SET threads = {threads}")
start = time.perf_counter()
rows = con.execute(QUERY).fetchall()
seconds = time.perf_counter() - start
counts = {c: 0 for c in ["AMOUNT_MISMATCH", "CHANNEL_ONLY", "DUPLICATE", "FEE_MISMATCH", "PLATFORM_ONLY", "STATUS_MISMATCH"]}
matched = absent = 0
for cls, n, dups in rows:
    counts["DUPLICATE"] += int(dups or 0)
    if cls == "MATCHED":
        matched = n
    elif cls == "ABSENT_AS_EXPECTED":
        absent = n
    else:
        counts[cls] = n
print(json.dumps({"seconds": round(seconds, 3), "threads": threads, "duckdb": duckdb.__version__,
                  "matched": matched, "absent_as_expected": absent, "counts": counts}))
