using System.Text.Json;

namespace MetaStone.Model.Tokenization;

/// <summary>Prompt formats of the reasoning models we run.</summary>
public enum ChatTemplateKind
{
    /// <summary>DeepSeek-R1-Distill-Qwen (MetaStone-S1 bases): <c>&lt;｜User｜&gt;…&lt;｜Assistant｜&gt;&lt;think&gt;\n</c>.</summary>
    DeepSeekR1,

    /// <summary>QwQ / Qwen3 ChatML with the thinking prefix: <c>&lt;|im_start|&gt;user\n…&lt;|im_end|&gt;\n&lt;|im_start|&gt;assistant\n&lt;think&gt;\n</c>.</summary>
    ChatMLThinking,

    /// <summary>No chat markup: the question, then <c>\n&lt;think&gt;\n</c> when the tokenizer knows <c>&lt;think&gt;</c>.</summary>
    Plain,
}

/// <summary>
/// Renders a single-turn generation prompt that ends where the model starts thinking. This is a fixed rendering
/// of the templates the models ship (Jinja is not evaluated), covering the one-question case we generate for.
/// </summary>
public sealed class ChatTemplate
{
    private const string DeepSeekBos = "<｜begin▁of▁sentence｜>";
    private const string ThinkToken = "<think>";
    private const string ImStartToken = "<|im_start|>";

    private static readonly (string Name, ChatTemplateKind Kind)[] NamedKinds =
    [
        ("deepseek-r1", ChatTemplateKind.DeepSeekR1),
        ("chatml", ChatTemplateKind.ChatMLThinking),
        ("plain", ChatTemplateKind.Plain),
    ];

    private readonly bool _writesBos;
    private readonly bool _writesThink;

    private ChatTemplate(ChatTemplateKind kind, Func<string, bool> tokenizerHasToken)
    {
        Kind = kind;
        Name = NamedKinds.First(n => n.Kind == kind).Name;
        _writesBos = kind == ChatTemplateKind.DeepSeekR1 && tokenizerHasToken(DeepSeekBos);
        _writesThink = kind != ChatTemplateKind.Plain || tokenizerHasToken(ThinkToken);
    }

    /// <summary>Names accepted by <see cref="Detect"/>'s override and <see cref="ParseName"/>.</summary>
    public static IReadOnlyList<string> ValidNames { get; } = NamedKinds.Select(n => n.Name).ToArray();

    public ChatTemplateKind Kind { get; }

    /// <summary>"deepseek-r1", "chatml" or "plain".</summary>
    public string Name { get; }

    /// <summary>Template of a given kind; the tokenizer decides whether BOS / <c>&lt;think&gt;</c> are written.</summary>
    public static ChatTemplate Create(ChatTemplateKind kind, QwenTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return new ChatTemplate(kind, token => tokenizer.TryGetTokenId(token) is not null);
    }

    /// <summary>
    /// Chooses the template for a model directory: <paramref name="overrideName"/> when given, else from
    /// tokenizer_config.json's <c>chat_template</c> (contains <c>&lt;｜Assistant｜&gt;</c> → DeepSeek-R1, contains
    /// <c>&lt;|im_start|&gt;</c> → ChatML), else ChatML if the tokenizer has <c>&lt;|im_start|&gt;</c>, else plain.
    /// </summary>
    public static ChatTemplate Detect(string modelDir, string? overrideName = null)
    {
        ArgumentNullException.ThrowIfNull(modelDir);
        // Only marker tokens (BOS, <think>, <|im_start|>) matter here, so the BPE itself is not built.
        var markerTokens = ReadMarkerTokenNames(modelDir);
        return Detect(modelDir, markerTokens.Contains, overrideName);
    }

    /// <summary>As <see cref="Detect(string, string?)"/> with an already loaded tokenizer (avoids re-reading tokenizer.json).</summary>
    public static ChatTemplate Detect(QwenTokenizer tokenizer, string modelDir, string? overrideName = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(modelDir);
        return Detect(modelDir, token => tokenizer.TryGetTokenId(token) is not null, overrideName);
    }

    /// <summary>Maps "deepseek-r1" / "chatml" / "plain" (case-insensitive) to a kind; throws listing the valid names otherwise.</summary>
    public static ChatTemplateKind ParseName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        foreach (var (validName, kind) in NamedKinds)
        {
            if (string.Equals(validName, name.Trim(), StringComparison.OrdinalIgnoreCase))
                return kind;
        }
        throw new ArgumentException($"Unknown chat template '{name}'. Valid names: {string.Join(", ", ValidNames)}.", nameof(name));
    }

    /// <summary>The prompt for one question, ending with the thinking prefix the model continues from.</summary>
    public string Render(string question, string? system = null)
    {
        ArgumentNullException.ThrowIfNull(question);
        return Kind switch
        {
            ChatTemplateKind.DeepSeekR1 =>
                (_writesBos ? DeepSeekBos : "") + (system ?? "") + "<｜User｜>" + question + "<｜Assistant｜><think>\n",
            ChatTemplateKind.ChatMLThinking =>
                (system is null ? "" : "<|im_start|>system\n" + system + "<|im_end|>\n")
                + "<|im_start|>user\n" + question + "<|im_end|>\n<|im_start|>assistant\n<think>\n",
            _ => _writesThink ? question + "\n<think>\n" : question,
        };
    }

    public override string ToString() => Name;

    private static ChatTemplate Detect(string modelDir, Func<string, bool> tokenizerHasToken, string? overrideName)
    {
        if (overrideName is not null)
            return new ChatTemplate(ParseName(overrideName), tokenizerHasToken);

        string? chatTemplate = ReadChatTemplateText(modelDir);
        ChatTemplateKind kind;
        if (chatTemplate is not null && chatTemplate.Contains("<｜Assistant｜>", StringComparison.Ordinal))
            kind = ChatTemplateKind.DeepSeekR1;
        else if (chatTemplate is not null && chatTemplate.Contains(ImStartToken, StringComparison.Ordinal))
            kind = ChatTemplateKind.ChatMLThinking;
        else
            kind = tokenizerHasToken(ImStartToken) ? ChatTemplateKind.ChatMLThinking : ChatTemplateKind.Plain;
        return new ChatTemplate(kind, tokenizerHasToken);
    }

    /// <summary>tokenizer_config.json's <c>chat_template</c>: a string, or a list of {name, template} (joined).</summary>
    private static string? ReadChatTemplateText(string modelDir)
    {
        string configPath = Path.Combine(modelDir, "tokenizer_config.json");
        if (!File.Exists(configPath))
            return null;
        using var stream = File.OpenRead(configPath);
        using var document = JsonDocument.Parse(stream);
        if (!document.RootElement.TryGetProperty("chat_template", out var template))
            return null;
        return template.ValueKind switch
        {
            JsonValueKind.String => template.GetString(),
            JsonValueKind.Array => string.Join("\n", template.EnumerateArray()
                .Select(t => t.TryGetProperty("template", out var text) ? text.GetString() : null)
                .Where(t => t is not null)),
            _ => null,
        };
    }

    private static HashSet<string> ReadMarkerTokenNames(string modelDir)
    {
        string tokenizerJson = Path.Combine(modelDir, "tokenizer.json");
        return File.Exists(tokenizerJson) ? HuggingFaceTokenizerFile.ReadMarkerTokenNames(tokenizerJson) : [];
    }
}
