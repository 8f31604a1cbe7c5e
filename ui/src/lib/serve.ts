// What the Serve screen shows a user to copy: a client call for the running server.

/** A Python call with the official `openai` client. */
export function pythonSnippet(url: string, model: string, key: string | null): string {
  return [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url="${url}", api_key="${key ?? "none"}")`,
    "reply = client.chat.completions.create(",
    `    model="${model}",`,
    '    messages=[{"role": "user", "content": "Hello!"}],',
    ")",
    "print(reply.choices[0].message.content)",
  ].join("\n");
}

/** The same request with curl. */
export function curlSnippet(url: string, model: string, key: string | null): string {
  const body = JSON.stringify({ model, messages: [{ role: "user", content: "Hello!" }] });
  const auth = key ? ` \\\n  -H "Authorization: Bearer ${key}"` : "";
  return `curl ${url}/chat/completions${auth} \\\n  -H "Content-Type: application/json" \\\n  -d '${body.replace(/'/g, "'\\''")}'`;
}

/** Mean decoding speed over the server's life, tokens per second (0 before any answer). */
export function meanRate(tokens: number, decodeSeconds: number): number {
  return decodeSeconds > 0 ? tokens / decodeSeconds : 0;
}
