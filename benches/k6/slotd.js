// k6 cross-check of slotd-load's ping and book-spread (benches/README.md §20), over gRPC with
// server reflection, closed loop with VUS virtual users (one HTTP/2 connection each) for
// DURATION. Run by benches/k6.sh, which starts a throwaway Redis and slotd and has slotd-load
// open the slots and register the receipts first (`--setup-only --run-id RUN`): the applicants
// here are slotd-load's (`Plan::applicant`), one fresh applicant per booking, on random slots
// of DAYS days from FIRST_DAY (08:00-11:45, every 15 minutes).
//   k6 run -e SCENARIO=ping|book-spread -e TARGET=127.0.0.1:PORT -e RUN=123456 \
//     -e FIRST_DAY=2026-12-03 -e DAYS=30 -e APPLICANTS=60000 -e VUS=32 -e DURATION=10s benches/k6/slotd.js
import grpc from 'k6/net/grpc';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';

const SCENARIO = __ENV.SCENARIO || 'ping';
const TARGET = __ENV.TARGET || '127.0.0.1:50051';
const RUN = __ENV.RUN || '000000';
const DAYS = parseInt(__ENV.DAYS || '30', 10);
const APPLICANTS = parseInt(__ENV.APPLICANTS || '60000', 10);
const FIRST_DAY = __ENV.FIRST_DAY || '';

export const options = {
  scenarios: {
    load: {
      executor: 'constant-vus',
      vus: parseInt(__ENV.VUS || '32', 10),
      duration: __ENV.DURATION || '10s',
    },
  },
  summaryTrendStats: ['avg', 'p(50)', 'p(90)', 'p(99)', 'max'],
};

const booked = new Counter('bookings_confirmed');
const refused = new Counter('calls_refused');
const client = new grpc.Client();
let connected = false;

function pad(n, width) {
  return String(n).padStart(width, '0');
}

function day(i) {
  const d = new Date(`${FIRST_DAY}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + i);
  return d.toISOString().slice(0, 10);
}

export default function () {
  if (!connected) {
    client.connect(TARGET, { plaintext: true, reflect: true });
    connected = true;
  }
  if (SCENARIO === 'ping') {
    const r = client.invoke('grpc.health.v1.Health/Check', { service: '' });
    if (r.status !== grpc.StatusOK) refused.add(1);
    return;
  }
  // One fresh applicant per iteration (slotd-load's numbering starts at 1).
  const i = exec.scenario.iterationInTest + 1;
  if (i > APPLICANTS) {
    exec.test.abort('the applicant pool (APPLICANTS) ran out');
  }
  const minutes = 8 * 60 + 15 * Math.floor(Math.random() * 16);
  const r = client.invoke('slotd.v1.BookingService/BookAppointment', {
    request_id: `k6-${RUN}-${i}`,
    slot: {
      post_id: 'BEIJING',
      category: 'ALL_OTHERS',
      date: day(Math.floor(Math.random() * DAYS)),
      time: `${pad(Math.floor(minutes / 60), 2)}:${pad(minutes % 60, 2)}`,
    },
    applicants: [{
      passport_number: `L${RUN}${pad(i, 7)}`,
      given_name: 'Load',
      surname: 'Test',
      ds160_confirmation: `AA${pad(i, 8)}`,
      receipt_number: `R${RUN}${pad(i, 7)}`,
    }],
  });
  if (r.status === grpc.StatusOK) booked.add(1); else refused.add(1);
}
