-- wrk script for api.sh: POST a container creation. The body and token come from the
-- environment (BENCH_POST_BODY, BENCH_TOKEN) so the same script drives hoodyd and nginx.
local body = os.getenv("BENCH_POST_BODY")
local token = os.getenv("BENCH_TOKEN")
assert(body and token, "post.lua needs BENCH_POST_BODY and BENCH_TOKEN in the environment")
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
