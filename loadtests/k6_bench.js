// Closed-loop load for the benchmark: VUS virtual users each send the next request when the
// previous one answers, until DURATION passes or MAX_REQUESTS were sent (whichever first).
// One fixed payload from loadtests/payloads.py; HTTP (task endpoints, v2 JSON/binary) or
// KServe v2 gRPC (ModelInfer with raw tensors, from the protojson form of the request).
//
//   k6 run --no-usage-report -q -e PROTOCOL=http -e URL=http://127.0.0.1:3000/generate \
//     -e BODY=results/payloads/task-gan_generator-seed-7.json -e HEADERS='{"Content-Type":"application/json"}' \
//     -e VUS=8 -e DURATION=10s -e SUMMARY=/tmp/summary.json loadtests/k6_bench.js
//
// ZOOSERVE_API_TOKEN (from the environment, as loadtests/bench.py passes it, or -e), or else
// ZOOSERVE_API_TOKENS_FILE: every request carries `Authorization: Bearer <token>` (gRPC: metadata
// `authorization`), unless HEADERS has an Authorization header of its own.
import http from 'k6/http';
import grpc from 'k6/net/grpc';
import { Counter } from 'k6/metrics';
import { apiToken } from './k6_auth.js';

const PROTOCOL = __ENV.PROTOCOL || 'http';
const VUS = parseInt(__ENV.VUS || '1');
const LOOPBACK = /^(http:\/\/)?(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(\/|$)/;
const TARGET = PROTOCOL === 'grpc' ? __ENV.TARGET : __ENV.URL;
const TOKEN = apiToken();
if (!LOOPBACK.test(TARGET)) {
  throw new Error(`load tests target loopback only, not ${TARGET}`);
}

export const options = {
  scenarios: {
    closed_loop: {
      executor: 'shared-iterations',
      vus: VUS,
      iterations: parseInt(__ENV.MAX_REQUESTS || '1000000'),
      maxDuration: __ENV.DURATION || '10s',
      gracefulStop: '5s',
    },
  },
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(50)', 'p(95)', 'p(99)'],
  noConnectionReuse: false,
};

const ok = new Counter('requests_ok');
const failed = new Counter('requests_failed');

let body;
let headers;
let client;
let request;
if (PROTOCOL === 'grpc') {
  client = new grpc.Client();
  client.load([__ENV.PROTO_DIR || 'services/api/proto'], 'open_inference_grpc.proto');
  request = JSON.parse(open(__ENV.BODY));
} else {
  body = open(__ENV.BODY, 'b');
  headers = JSON.parse(__ENV.HEADERS || '{}');
  if (TOKEN && !Object.keys(headers).some((name) => name.toLowerCase() === 'authorization')) {
    headers.Authorization = `Bearer ${TOKEN}`;
  }
}
const grpcParams = { timeout: '60s', metadata: TOKEN ? { authorization: `Bearer ${TOKEN}` } : {} };

export default function () {
  if (PROTOCOL === 'grpc') {
    if (__ITER === 0) {
      client.connect(TARGET, { plaintext: true, reflect: false, timeout: '30s' });
    }
    const res = client.invoke('inference.GRPCInferenceService/ModelInfer', request, grpcParams);
    if (res && res.status === grpc.StatusOK) {
      ok.add(1);
    } else {
      failed.add(1, { status: String(res ? res.status : 'none') });
    }
    return;
  }
  const res = http.post(TARGET, body, { headers, timeout: '60s' });
  if (res.status === 200) {
    ok.add(1);
  } else {
    failed.add(1, { status: String(res.status) });
  }
}

export function handleSummary(data) {
  const m = data.metrics;
  const trend = PROTOCOL === 'grpc' ? m.grpc_req_duration : m.http_req_duration;
  const values = trend ? trend.values : {};
  const seconds = data.state.testRunDurationMs / 1000;
  const okCount = m.requests_ok ? m.requests_ok.values.count : 0;
  const out = {
    requests: okCount,
    failed: m.requests_failed ? m.requests_failed.values.count : 0,
    seconds: seconds,
    throughput_rps: okCount / seconds,
    avg_ms: values.avg,
    p50_ms: values['p(50)'],
    p95_ms: values['p(95)'],
    p99_ms: values['p(99)'],
    max_ms: values.max,
  };
  return { [__ENV.SUMMARY || 'k6-summary.json']: JSON.stringify(out) };
}
