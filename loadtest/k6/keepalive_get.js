// Keep-alive GET at a fixed arrival rate: latency percentiles at equal load.
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:8080 -e RATE=2000 loadtest/k6/keepalive_get.js
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
export const options = {
  scenarios: {
    get: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 2000), timeUnit: '1s',
      duration: __ENV.DURATION || '20s',
      preAllocatedVUs: 64, maxVUs: 256,
    },
  },
  thresholds: { http_req_failed: ['rate<0.001'], http_req_duration: ['p(99)<50'] },
};

export default function () {
  const r = http.get(`${BASE}${__ENV.URL_PATH || '/pets'}`);
  check(r, { 'status 200': (x) => x.status === 200 });
}
