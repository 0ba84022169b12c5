// Throttle accuracy under load: offers OFFERED req/s (default 2000) for DURATION (default 10s)
// to a route limited to LIMIT_RATE req/s with burst LIMIT_BURST (defaults 1000 / 500, as in
// loadtest/throttle.toml, two shards), and reports accepted / (burst + rate * T). The gateway
// promises a ratio within [0.97, 1.0] plus a small lease slack.
//   k6 run --no-usage-report loadtest/k6/throttle_accuracy.js
import http from 'k6/http';
import { Counter } from 'k6/metrics';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8090';
const RATE = Number(__ENV.LIMIT_RATE || 1000);
const BURST = Number(__ENV.LIMIT_BURST || 500);
const SECS = Number(__ENV.DURATION_S || 10);
const accepted = new Counter('accepted');
const refused = new Counter('refused_429');
const other = new Counter('other_status');

export const options = {
  scenarios: {
    offered: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.OFFERED || 2000), timeUnit: '1s',
      duration: `${SECS}s`, preAllocatedVUs: 100, maxVUs: 400,
    },
  },
};

export default function () {
  const r = http.get(`${BASE}${__ENV.URL_PATH || '/limited'}`);
  if (r.status === 200) accepted.add(1);
  else if (r.status === 429) refused.add(1);
  else other.add(1);
}

export function handleSummary(data) {
  const got = data.metrics.accepted ? data.metrics.accepted.values.count : 0;
  const no = data.metrics.refused_429 ? data.metrics.refused_429.values.count : 0;
  const allowed = BURST + RATE * SECS;
  const line = `accepted ${got} refused ${no} allowed ${allowed} ratio ${(got / allowed).toFixed(4)}\n`;
  return { stdout: line };
}
