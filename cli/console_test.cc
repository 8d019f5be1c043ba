// The console of `shoalctl run`: workers' chunks become whole lines, printed above a
// progress line that redraws on a terminal; plain lines, nothing else, on a pipe.
#include "cli/console.h"

#include <gtest/gtest.h>

#include <string>

namespace shoal {
namespace {

struct Captured {
  std::string out;
  std::function<void(std::string_view)> writer() {
    return [this](std::string_view s) { out.append(s); };
  }
};

TEST(Console, PartialLinesWaitForTheirNewline) {
  Captured c;
  Console con(c.writer(), false);
  con.Feed(1, "[worker[0]] epoch 4: test ");
  EXPECT_EQ(c.out, "");
  con.Feed(1, "accuracy 0.8701\n[worker[0]] nex");
  EXPECT_EQ(c.out, "[worker[0]] epoch 4: test accuracy 0.8701\n");
  con.Feed(1, "t\n");
  EXPECT_EQ(c.out, "[worker[0]] epoch 4: test accuracy 0.8701\n[worker[0]] next\n");
}

TEST(Console, SourcesKeepTheirOwnPartialLines) {
  Captured c;
  Console con(c.writer(), false);
  con.Feed(1, "one from 1, ");
  con.Feed(2, "one from 2\n");
  con.Feed(1, "ends here\n");
  EXPECT_EQ(c.out, "one from 2\none from 1, ends here\n");
}

TEST(Console, SeveralLinesInOneChunk) {
  Captured c;
  Console con(c.writer(), false);
  con.Feed(3, "a\nb\nc\n");
  EXPECT_EQ(c.out, "a\nb\nc\n");
}

TEST(Console, ClosingASourcePrintsWhatItLeftWithoutANewline) {
  Captured c;
  Console con(c.writer(), false);
  con.Feed(1, "mpirun noticed that process rank 1 exited");
  con.Close(1);
  EXPECT_EQ(c.out, "mpirun noticed that process rank 1 exited\n");
  con.Close(1);  // twice: nothing more
  con.Close(9);  // never fed
  EXPECT_EQ(c.out, "mpirun noticed that process rank 1 exited\n");
}

// Not a terminal: the progress line is never drawn, no '\r' and no escape code appears.
TEST(Console, PlainModeHasNoCarriageReturnsOrEscapes) {
  Captured c;
  Console con(c.writer(), false);
  con.Progress("epoch 1/5  40%  41433 samples/s");
  con.Feed(1, "log line\r\n");
  con.Line("shoalctl: started worker 2");
  con.KeepProgress();
  con.ClearProgress();
  EXPECT_EQ(c.out, "log line\nshoalctl: started worker 2\n");
  EXPECT_EQ(c.out.find('\r'), std::string::npos);
  EXPECT_EQ(c.out.find('\x1b'), std::string::npos);
}

// A terminal: log lines go above the progress line, which is erased and drawn again.
TEST(Console, TerminalRedrawsTheProgressLineBelowLogLines) {
  Captured c;
  Console con(c.writer(), true);
  con.Progress("step 10");
  EXPECT_EQ(c.out, "\r\x1b[Kstep 10");
  c.out.clear();
  con.Feed(1, "[worker[0]] epoch 1: test accuracy 0.80\n");
  EXPECT_EQ(c.out, "\r\x1b[K[worker[0]] epoch 1: test accuracy 0.80\n\r\x1b[Kstep 10");
  c.out.clear();
  con.Progress("step 20");
  EXPECT_EQ(c.out, "\r\x1b[Kstep 20");
  c.out.clear();
  con.KeepProgress();  // an epoch ended: its last progress stays on screen
  EXPECT_EQ(c.out, "\n");
  c.out.clear();
  con.Line("after");  // no progress line to erase or redraw now
  EXPECT_EQ(c.out, "after\n");
  c.out.clear();
  con.Progress("step 30");
  con.ClearProgress();
  EXPECT_EQ(c.out, "\r\x1b[Kstep 30\r\x1b[K");
}

TEST(Console, ProgressIsCutToTheTerminalWidth) {
  Captured c;
  Console con(c.writer(), true, 10);
  con.Progress("0123456789abcdef");
  EXPECT_EQ(c.out, "\r\x1b[K012345678");
}

TEST(Console, VeryLongLinesArriveWholeUpToTheCap) {
  Captured c;
  Console con(c.writer(), false);
  const std::string long_line(200 * 1024, 'x');
  for (size_t i = 0; i < long_line.size(); i += 4096) con.Feed(1, std::string_view(long_line).substr(i, 4096));
  EXPECT_EQ(c.out, "");
  con.Feed(1, "\n");
  EXPECT_EQ(c.out, long_line + "\n");
  // Past the cap, a line without end is printed in pieces: bounded memory, no byte lost.
  c.out.clear();
  const std::string endless(Console::kMaxLine * 2 + 5, 'y');
  con.Feed(2, endless);
  EXPECT_EQ(c.out, std::string(Console::kMaxLine, 'y') + "\n" + std::string(Console::kMaxLine, 'y') + "\n");
  con.Close(2);
  EXPECT_EQ(c.out.size(), endless.size() + 3);
}

}  // namespace
}  // namespace shoal
