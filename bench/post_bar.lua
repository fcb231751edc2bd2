-- wrk script for POST /api/v1/bar: the contract's two-item body, as JSON.
-- python -m bench sends the same body (read from the wrk.body line) for its sample requests.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"hello": "world", "world": [{"color": "red", "size": 1.5}, {"color": "blue"}]}'
