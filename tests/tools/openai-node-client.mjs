// Drives a MetaStone gateway with the official OpenAI JavaScript SDK (npm `openai`, fetched by fetch-openai-npm.sh):
// one non-streaming and one streaming chat completion. Run by GatewayNodeSdkTests; prints one JSON document on stdout.
//
// Usage: node openai-node-client.mjs <openai-npm-cache-dir> <base-url, e.g. http://127.0.0.1:8000/v1> <api-key> <model> <question>
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const [cacheDir, baseURL, apiKey, model, question] = process.argv.slice(2);
if (!question) {
  console.error("usage: node openai-node-client.mjs CACHE_DIR BASE_URL API_KEY MODEL QUESTION");
  process.exit(2);
}
// The package lives in the test cache, not next to this script: resolve it from there.
const require = createRequire(path.join(cacheDir, "package.json"));
const OpenAI = require("openai");
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120_000 });
const messages = [{ role: "user", content: question }];

const completion = await client.chat.completions.create({ model, messages, reasoning_effort: "medium", max_completion_tokens: 256 });

const stream = await client.chat.completions.create({ model, messages, reasoning_effort: "low", max_completion_tokens: 256, stream: true });
let content = "", reasoning = "", chunks = 0, finishReason = null, progress = 0, id = null;
for await (const chunk of stream) {
  chunks++;
  id ??= chunk.id;
  const choice = chunk.choices[0];
  content += choice?.delta?.content ?? "";
  reasoning += choice?.delta?.reasoning_content ?? "";
  finishReason = choice?.finish_reason ?? finishReason;
  if (chunk.metastone?.candidate !== undefined) progress++;
}

console.log(JSON.stringify({
  sdkVersion: JSON.parse(fs.readFileSync(path.join(cacheDir, "node_modules", "openai", "package.json"), "utf8")).version,
  completion: {
    id: completion.id,
    object: completion.object,
    content: completion.choices[0].message.content,
    reasoning: completion.choices[0].message.reasoning_content,
    finishReason: completion.choices[0].finish_reason,
    k: completion.metastone?.k,
    reasoningTokens: completion.usage?.completion_tokens_details?.reasoning_tokens,
  },
  stream: { id, chunks, content, reasoning, finishReason, progress },
}));
