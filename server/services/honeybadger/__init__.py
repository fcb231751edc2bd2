"""Error reporting to Honeybadger: pure payload functions (payload.py) and a sender thread (sender.py).

Neither knows HTTP requests or SAQ jobs: a request's context is captured by
middlewares/reporting.py, a job's by workers/reporting.py, into a plain `Report`.
"""
