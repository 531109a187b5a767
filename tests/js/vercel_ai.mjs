// The Vercel AI SDK against `baton serve`, as an application would use it: the OpenAI provider's default model
// (the Responses API) and the Anthropic provider (the Messages API), generated and streamed. Prints one JSON line.
// Usage: node vercel_ai.mjs BASE_URL MODEL   (BASE_URL ends in /v1)
import { generateText, streamText } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createAnthropic } from "@ai-sdk/anthropic";

const [baseURL, model] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey: "unused" });
const anthropic = createAnthropic({ baseURL, apiKey: "unused" });
const prompt = "Write def total(xs) that sums a list; what is 2 + 2?";
const out = {};

const generated = await generateText({ model: openai(model), prompt, maxRetries: 0 });
out.responses = { text: generated.text, inputTokens: generated.usage.inputTokens, outputTokens: generated.usage.outputTokens,
                  finishReason: generated.finishReason, modelId: generated.response.modelId };

const streamed = streamText({ model: openai(model), prompt, maxRetries: 0 });
let pieces = 0;
for await (const piece of streamed.textStream) { if (piece) pieces += 1; }
out.responsesStream = { text: await streamed.text, pieces, usage: await streamed.usage };

const chat = await generateText({ model: openai.chat(model), prompt, maxRetries: 0 });
out.chat = { text: chat.text, inputTokens: chat.usage.inputTokens };

const claude = await generateText({ model: anthropic(model), prompt, maxRetries: 0 });
out.messages = { text: claude.text, inputTokens: claude.usage.inputTokens, outputTokens: claude.usage.outputTokens,
                 finishReason: claude.finishReason };
const claudeStream = streamText({ model: anthropic(model), prompt, maxRetries: 0 });
out.messagesStream = { text: await claudeStream.text };

console.log(JSON.stringify(out));
