"""`keras-adalink demo`: the fine-tune + serve demo (`keras_adalink.demo`)."""


def cmd_demo(args):
    from keras_adalink import demo

    demo.run(args)
