namespace MetaStone.Training.Tasks;

/// <summary>
/// The ChatML conversation format of the task model, shared by the tokenizer builder (special tokens, Jinja
/// <c>chat_template</c>) and the trainer (rendered prompts), so the two cannot drift apart.
/// </summary>
/// <remarks>
/// A rendered training example is <c>GenerationPrompt(prompt) + Solution(problem) + "&lt;|im_end|&gt;"</c>:
/// <code>
/// &lt;|im_start|&gt;user\nCompute 47 + 385 - 29 * 3 from left to right.&lt;|im_end|&gt;\n&lt;|im_start|&gt;assistant\n&lt;think&gt;\n
/// 47 + 385 = 432.\n\n432 - 29 = 403.\n\n403 * 3 = 1209.\n\n&lt;/think&gt;\n\n\boxed{1209}&lt;|im_end|&gt;
/// </code>
/// As in the R1-Distill / QwQ templates, <c>&lt;think&gt;\n</c> belongs to the prompt, not to the response.
/// </remarks>
public static class TaskChatFormat
{
    /// <summary>Document separator and padding token; never produced inside a conversation.</summary>
    public const string EndOfText = "<|endoftext|>";
    public const string ImStart = "<|im_start|>";

    /// <summary>End of a turn, and the EOS token the model stops generating at.</summary>
    public const string ImEnd = "<|im_end|>";
    public const string ThinkOpen = "<think>";
    public const string ThinkClose = "</think>";

    /// <summary>The SPRM step token: every reasoning step ends with it.</summary>
    public const string StepEnd = ".\n\n";

    /// <summary>Special tokens in id order (they follow the BPE vocabulary in tokenizer.json).</summary>
    public static IReadOnlyList<string> SpecialTokens { get; } = [EndOfText, ImStart, ImEnd, ThinkOpen, ThinkClose];

    /// <summary>
    /// The Jinja chat template written to tokenizer_config.json. Plain ChatML; with <c>add_generation_prompt</c>
    /// it opens the assistant turn and the thinking block (<c>&lt;|im_start|&gt;assistant\n&lt;think&gt;\n</c>).
    /// </summary>
    public const string JinjaChatTemplate =
        "{%- for message in messages %}"
        + "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        + "{%- endfor %}"
        + "{%- if add_generation_prompt %}"
        + "{{- '<|im_start|>assistant\\n<think>\\n' }}"
        + "{%- endif %}";

    /// <summary>
    /// What <see cref="JinjaChatTemplate"/> renders for one user message with <c>add_generation_prompt=true</c>:
    /// <c>&lt;|im_start|&gt;user\n{userPrompt}&lt;|im_end|&gt;\n&lt;|im_start|&gt;assistant\n&lt;think&gt;\n</c>.
    /// </summary>
    public static string GenerationPrompt(string userPrompt)
    {
        ArgumentNullException.ThrowIfNull(userPrompt);
        return $"{ImStart}user\n{userPrompt}{ImEnd}\n{ImStart}assistant\n{ThinkOpen}\n";
    }

    /// <summary>The full training text of one example: prompt, reference solution and the closing <c>&lt;|im_end|&gt;</c>.</summary>
    public static string TrainingText(ArithmeticProblem problem) =>
        GenerationPrompt(problem.Prompt) + ArithmeticChainTask.Solution(problem) + ImEnd;

    /// <inheritdoc cref="TrainingText(ArithmeticProblem)"/>
    public static string TrainingText(TaskProblem problem) =>
        GenerationPrompt(problem.Prompt) + problem.Solution + ImEnd;
}
