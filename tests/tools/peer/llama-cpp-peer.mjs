// The llama.cpp side of `metastone bench peer`: loads a GGUF with node-llama-cpp (CPU, prebuilt binary) and samples
// `sequences` continuations of the same prompt token ids at once (one context with that many sequences, so llama.cpp
// decodes them in one batch), `newTokens` each. Prints one JSON line with the timings on stdout: loadSeconds = loadModel
// (mmap) + createContext, warmupSeconds = one decode that pages the weights in, generateSeconds = the timed generation.
//
// Usage: node llama-cpp-peer.mjs REQUEST.json
//   REQUEST.json: { "nodeLlamaCppDirectory", "model", "promptTokens": [ids], "sequences", "newTokens", "temperature",
//                   "topP", "topK", "seed", "threads" }
// nodeLlamaCppDirectory is the cache tests/tools/peer/fetch-node-llama-cpp.sh fills (it holds node_modules/node-llama-cpp).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { performance } from "node:perf_hooks";

const request = JSON.parse(readFileSync(process.argv[2], "utf8"));
const entry = join(request.nodeLlamaCppDirectory, "node_modules", "node-llama-cpp", "dist", "index.js");
const { getLlama } = await import(pathToFileURL(entry).href);

// build: "never" = the prebuilt @node-llama-cpp/linux-x64 binary or fail; never compile llama.cpp from source here.
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error", maxThreads: request.threads });

const loadStart = performance.now();
const model = await llama.loadModel({ modelPath: request.model, gpuLayers: 0, useMmap: true });
const context = await model.createContext({
    sequences: request.sequences,
    contextSize: request.promptTokens.length + request.newTokens + 16, // per sequence
    threads: { ideal: request.threads, min: request.threads },
});
const loadSeconds = (performance.now() - loadStart) / 1000;

const sequences = Array.from({ length: request.sequences }, () => context.getSequence());

// Warm-up, not timed as generation: with mmap, loadModel only maps the file and the first decode faults every weight page
// in. llama.cpp's own tools (common_init_from_params) run such a warm-up decode too. One token through every layer and the
// (tied) output head touches every weight; the sequence is cleared afterwards.
const warmupStart = performance.now();
for await (const token of sequences[0].evaluate([request.promptTokens[0]], { temperature: 0 })) { void token; break; }
await sequences[0].clearHistory();
const warmupSeconds = (performance.now() - warmupStart) / 1000;

const generateStart = performance.now();
// Every sequence evaluates the same prompt and then samples; node-llama-cpp batches the sequences' pending tokens into
// one llama_decode per step. No repetition penalty; top-k 0 = off (node-llama-cpp's default would be 40).
// Temperature 0 = greedy (the bench's parity check).
const perSequence = await Promise.all(sequences.map(async (sequence, i) => {
    const tokens = [];
    const iterator = sequence.evaluate(request.promptTokens, {
        temperature: request.temperature, topP: request.topP, topK: request.topK, minP: 0, seed: request.seed + i,
    });
    for await (const token of iterator) {
        tokens.push(token);
        if (tokens.length >= request.newTokens) break;
    }
    return tokens;
}));
const generateSeconds = (performance.now() - generateStart) / 1000;

const generatedTokens = perSequence.reduce((sum, tokens) => sum + tokens.length, 0);
console.log(JSON.stringify({
    engine: "llama.cpp",
    binding: "node-llama-cpp",
    llamaCppRelease: llama.llamaCppRelease?.release ?? null,
    buildType: llama.buildType,
    threads: context.currentThreads ?? request.threads,
    sequences: request.sequences,
    promptTokens: request.promptTokens.length,
    loadSeconds,
    warmupSeconds,
    generateSeconds,
    generatedTokens,
    tokensPerSecond: generatedTokens / generateSeconds,
    maxRssBytes: process.resourceUsage().maxRSS * 1024,
    firstSequenceText: model.detokenize(perSequence[0], true),
}));
await context.dispose();
await model.dispose();
await llama.dispose();
