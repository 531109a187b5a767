// A tool round trip through the Vercel AI SDK against `baton serve`: the SDK offers `get_weather`, runs the call the
// model makes, sends the result back and prints the final text, over each of its three providers. One JSON line.
// Usage: node vercel_ai_tools.mjs BASE_URL MODEL
import { generateText, jsonSchema, stepCountIs, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createAnthropic } from "@ai-sdk/anthropic";

const [baseURL, model] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey: "unused" });
const anthropic = createAnthropic({ baseURL, apiKey: "unused" });
const calls = [];
const tools = {
  get_weather: tool({
    description: "Weather now",
    inputSchema: jsonSchema({ type: "object", properties: { city: { type: "string" } }, required: ["city"] }),
    execute: async ({ city }) => { calls.push(city); return { celsius: 18 }; },
  }),
};
const out = {};
for (const [name, m] of [["responses", openai(model)], ["chat", openai.chat(model)], ["messages", anthropic(model)]]) {
  const result = await generateText({ model: m, tools, stopWhen: stepCountIs(3), prompt: "What is the weather in Paris?", maxRetries: 0 });
  out[name] = { text: result.text, steps: result.steps.length };
}
out.calls = calls;
console.log(JSON.stringify(out));
