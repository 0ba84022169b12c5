// Burst shaping: idle, a sudden burst far above the steady rate, then steady. With throttles
// configured, the share of 429s and their Retry-After / RateLimit-* headers show how the
// gateway shapes the burst; without them, every request should pass.
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:8080 loadtest/k6/burst.js
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const throttled = new Counter('throttled_429');
export const options = {
  scenarios: {
    burst: {
      executor: 'ramping-arrival-rate',
      startRate: 10, timeUnit: '1s', preAllocatedVUs: 100, maxVUs: 500,
      stages: [
        { target: 10, duration: '5s' },
        { target: Number(__ENV.PEAK || 5000), duration: '1s' },
        { target: Number(__ENV.PEAK || 5000), duration: '5s' },
        { target: Number(__ENV.STEADY || 500), duration: '1s' },
        { target: Number(__ENV.STEADY || 500), duration: '10s' },
      ],
    },
  },
};

export default function () {
  const r = http.get(`${BASE}${__ENV.URL_PATH || '/pets'}`);
  if (r.status === 429) {
    throttled.add(1);
    check(r, { 'Retry-After on 429': (x) => x.headers['Retry-After'] !== undefined });
  } else {
    check(r, { 'status 200': (x) => x.status === 200 });
  }
}
