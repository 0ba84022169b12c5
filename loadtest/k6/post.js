// POST with a 16 KiB body over keep-alive: request-body streaming under load.
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:8080 loadtest/k6/post.js
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const BODY = 'x'.repeat(16384);
export const options = {
  vus: Number(__ENV.VUS || 32),
  duration: __ENV.DURATION || '20s',
  thresholds: { http_req_failed: ['rate<0.001'] },
};

export default function () {
  const r = http.post(`${BASE}${__ENV.URL_PATH || '/pets'}`, BODY, { headers: { 'Content-Type': 'application/octet-stream' } });
  check(r, { 'status 2xx': (x) => x.status >= 200 && x.status < 300 });
}
