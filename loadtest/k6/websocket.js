// WebSocket API load: CONNS connections (default 1000), each sending a message every second
// for DURATION (default 30s) and timing the two-way route's answer (a round trip through the
// HTTP integration). Ends by itself. Against loadtest/websocket.toml:
//   k6 run --no-usage-report -e CONNS=10000 -e DURATION=60s loadtest/k6/websocket.js
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const URL = __ENV.WS_URL || 'ws://127.0.0.1:8095/';
const CONNS = parseInt(__ENV.CONNS || '1000');
const DURATION = __ENV.DURATION || '30s';
const seconds = parseInt(DURATION);

const rtt = new Trend('ws_round_trip', true);
const sent = new Counter('ws_messages_sent');
const answered = new Counter('ws_messages_answered');
const received = new Counter('ws_messages_received');

export const options = {
  scenarios: {
    chat: {
      executor: 'per-vu-iterations',
      vus: CONNS,
      iterations: 1,
      maxDuration: `${seconds + 30}s`,
    },
  },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
  thresholds: {
    ws_round_trip: ['p(99)<250'],
  },
};

export default function () {
  const res = ws.connect(URL, {}, function (socket) {
    let pending = 0;
    socket.on('open', function () {
      // Spread the connections' sends over the second.
      socket.setTimeout(function () {
        socket.setInterval(function () {
          pending = Date.now();
          socket.send(JSON.stringify({ action: 'sendmessage', text: 'hello' }));
          sent.add(1);
        }, 1000);
      }, Math.random() * 1000);
      socket.setTimeout(function () {
        socket.close();
      }, seconds * 1000);
    });
    socket.on('message', function () {
      received.add(1);
      // Timed when it answers the latest message (an answer slower than the next send is
      // counted as received, not timed).
      if (pending) {
        rtt.add(Date.now() - pending);
        answered.add(1);
        pending = 0;
      }
    });
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
}
