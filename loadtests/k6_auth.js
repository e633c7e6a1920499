// The API token for the k6 scripts, as loadtests/auth.py finds it: ZOOSERVE_API_TOKEN, else the
// first line of ZOOSERVE_API_TOKENS_FILE that is neither blank nor a # comment; '' without either.
// Call it in the init context (k6's open() is only available there).
export function apiToken() {
  const token = (__ENV.ZOOSERVE_API_TOKEN || '').trim();
  if (token || !__ENV.ZOOSERVE_API_TOKENS_FILE) {
    return token;
  }
  for (const line of open(__ENV.ZOOSERVE_API_TOKENS_FILE).split('\n')) {
    if (line.trim() && !line.trim().startsWith('#')) {
      return line.trim();
    }
  }
  throw new Error(`ZOOSERVE_API_TOKENS_FILE=${__ENV.ZOOSERVE_API_TOKENS_FILE} holds no token`);
}
