// Soak: moderate steady load for a long time (default 10 minutes) to surface leaks,
// connection-pool drift and latency creep. Watch the gateway's RSS while it runs.
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:8080 -e DURATION=10m loadtest/k6/soak.js
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
export const options = {
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 1000), timeUnit: '1s',
      duration: __ENV.DURATION || '10m',
      preAllocatedVUs: 50, maxVUs: 200,
    },
  },
  thresholds: { http_req_failed: ['rate<0.0001'] },
};

export default function () {
  const paths = ['/pets', '/pets/42', '/status', '/files/a/b.txt'];
  const r = http.get(`${BASE}${paths[__ITER % paths.length]}`);
  check(r, { 'status 200': (x) => x.status === 200 });
}
