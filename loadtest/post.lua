-- wrk script: POST with a 16 KiB body over keep-alive.
--   wrk -t1 -c64 -d10s -s loadtest/post.lua http://127.0.0.1:8080/pets
wrk.method = "POST"
wrk.body = string.rep("x", 16384)
wrk.headers["Content-Type"] = "application/octet-stream"
