#include "hf/chat_format.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grpo::hf {
namespace {

using ::testing::HasSubstr;

TEST(ChatFormatTest, ChatMlWithAndWithoutSystem) {
  EXPECT_EQ(FormatPrompt(ChatFormat::kChatMl, "Be brief.", "What is 2+2?"),
            "<|im_start|>system\nBe brief.<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(FormatPrompt(ChatFormat::kChatMl, "", "hi"),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatFormatTest, Llama3WithAndWithoutSystem) {
  EXPECT_EQ(FormatPrompt(ChatFormat::kLlama3, "Be brief.", "What is 2+2?"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(FormatPrompt(ChatFormat::kLlama3, "", "hi"),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatFormatTest, RawIsTheUserMessage) {
  EXPECT_EQ(FormatPrompt(ChatFormat::kRaw, "ignored", "7+5*3-4="), "7+5*3-4=");
}

TEST(ChatFormatTest, MessagesAreInsertedVerbatim) {
  // Newlines and braces survive; nothing is trimmed or escaped.
  EXPECT_EQ(FormatPrompt(ChatFormat::kChatMl, "", "  {x}\n\n"),
            "<|im_start|>user\n  {x}\n\n<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatFormatTest, ParsesNamesAndNamesTheBadOne) {
  EXPECT_EQ(*ParseChatFormat("raw"), ChatFormat::kRaw);
  EXPECT_EQ(*ParseChatFormat("chatml"), ChatFormat::kChatMl);
  EXPECT_EQ(*ParseChatFormat("llama3"), ChatFormat::kLlama3);
  for (ChatFormat format : {ChatFormat::kRaw, ChatFormat::kChatMl, ChatFormat::kLlama3}) {
    EXPECT_EQ(*ParseChatFormat(ChatFormatName(format)), format);
  }
  for (const char* bad : {"ChatML", "llama", "", "qwen"}) {
    const absl::StatusOr<ChatFormat> format = ParseChatFormat(bad);
    ASSERT_FALSE(format.ok()) << bad;
    EXPECT_EQ(format.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(format.status().message(), HasSubstr(absl::StrCat("\"", bad, "\"")));
    EXPECT_THAT(format.status().message(), HasSubstr("raw, chatml or llama3"));
  }
}

TEST(ChatFormatTest, GuessesFromModelType) {
  EXPECT_EQ(GuessChatFormat("qwen2"), ChatFormat::kChatMl);
  EXPECT_EQ(GuessChatFormat("qwen3"), ChatFormat::kChatMl);
  EXPECT_EQ(GuessChatFormat("qwen3_moe"), ChatFormat::kChatMl);
  EXPECT_EQ(GuessChatFormat("llama"), ChatFormat::kLlama3);
  EXPECT_FALSE(GuessChatFormat("mistral").has_value());
  EXPECT_FALSE(GuessChatFormat("").has_value());
}

}  // namespace
}  // namespace grpo::hf
