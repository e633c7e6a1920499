// gRPC load smoke for KServe v2: VUS virtual users send ModelInfer (raw tensors, as tritonclient
// does) for DURATION, mixing the tensor model and its `_raw` twin, and check every answer.
// Fails (exit code 99) on any error or wrong answer.  Loopback targets only.
//
//   .venv/bin/k6 run --no-usage-report -e TARGET=127.0.0.1:8001 -e VUS=8 -e DURATION=5s loadtests/k6_grpc.js
//
// MODEL (default gan_generator) must take one FP32 input `latent` of shape [-1, LATENT] and give
// `image`; its `_raw` twin takes INT64 `seeds`.  Health and server reflection are checked once.
// ZOOSERVE_API_TOKEN (from the environment, or -e), or else ZOOSERVE_API_TOKENS_FILE: every call
// carries the metadata `authorization: Bearer <token>`.
import grpc from 'k6/net/grpc';
import encoding from 'k6/encoding';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { apiToken } from './k6_auth.js';

const TARGET = __ENV.TARGET || '127.0.0.1:8001';
if (!/^(127\.0\.0\.1|localhost|\[::1\]):\d+$/.test(TARGET)) {
  throw new Error(`the load smoke targets loopback only, not ${TARGET}`);
}
const MODEL = __ENV.MODEL || 'gan_generator';
const LATENT = parseInt(__ENV.LATENT || '100');
const BATCH = parseInt(__ENV.BATCH || '4');
const TOKEN = apiToken();
const METADATA = TOKEN ? { authorization: `Bearer ${TOKEN}` } : {};

export const options = {
  scenarios: {
    smoke: {
      executor: 'constant-vus',
      vus: parseInt(__ENV.VUS || '8'),
      duration: __ENV.DURATION || '5s',
      gracefulStop: '10s',
    },
  },
  thresholds: {
    checks: ['rate==1'],
    infer_failed: ['count==0'],
    grpc_req_duration: ['p(99)<2000'],
  },
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max'],
};

const failed = new Counter('infer_failed');
const client = new grpc.Client();
client.load(['../services/api/proto'], 'open_inference_grpc.proto');

function littleEndianBase64(typed) {
  return encoding.b64encode(typed.buffer, 'std');
}

const latents = new Float32Array(BATCH * LATENT);
for (let i = 0; i < latents.length; i++) {
  latents[i] = Math.sin(i) * 2.0;
}
const seeds = new BigInt64Array([1n, 2n, 3n, 4n].slice(0, Math.min(BATCH, 4)));

const tensorRequest = {
  model_name: MODEL,
  inputs: [{ name: 'latent', datatype: 'FP32', shape: [BATCH, LATENT] }],
  raw_input_contents: [littleEndianBase64(latents)],
};
const rawRequest = {
  model_name: `${MODEL}_raw`,
  inputs: [{ name: 'seeds', datatype: 'INT64', shape: [seeds.length] }],
  raw_input_contents: [littleEndianBase64(seeds)],
};

export default function () {
  try {
    infer();
  } catch (e) {
    console.error(`iteration failed: ${e}`);
    failed.add(1);
  }
}

function infer() {
  if (__ITER === 0) {
    client.connect(TARGET, { plaintext: true, timeout: '10s' });
    if (__VU === 1) {
      const ready = client.invoke('inference.GRPCInferenceService/ServerReady', {}, { metadata: METADATA });
      check(ready, { 'server ready': (r) => r && r.status === grpc.StatusOK && r.message.ready === true });
      // grpc.health.v1 through a second client that learns the service by server reflection
      const probe = new grpc.Client();
      probe.connect(TARGET, { plaintext: true, reflect: true, reflectMetadata: METADATA, timeout: '10s' });
      const health = probe.invoke(
        'grpc.health.v1.Health/Check',
        { service: 'inference.GRPCInferenceService' },
        { metadata: METADATA },
      );
      check(health, { 'health SERVING': (r) => r && r.status === grpc.StatusOK && r.message.status === 'SERVING' });
      probe.close();
    }
  }
  const raw = __ITER % 4 === 3;
  const res = client.invoke('inference.GRPCInferenceService/ModelInfer', raw ? rawRequest : tensorRequest, {
    timeout: '30s',
    metadata: METADATA,
  });
  const ok = check(res, {
    'status OK': (r) => r && r.status === grpc.StatusOK,
    'one raw output per output': (r) =>
      r && r.message && r.message.outputs.length === 1 && r.message.rawOutputContents.length === 1,
    'output shape': (r) =>
      r && r.message && r.message.outputs[0].shape[0] === String(raw ? seeds.length : BATCH),
  });
  if (!ok) {
    failed.add(1);
  }
}

export function teardown() {
  client.close();
}
